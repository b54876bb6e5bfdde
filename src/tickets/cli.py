"""The `tickets` command: find | transfer | eval | inspect | demo | run | report.

Options come from an optional YAML file (``--config``) overridden by flags. Bad input ends with one line,
``tickets: error: <problem>: <fix>``, and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tickets.errors import TicketsError

EPILOG = "Data root: --data-root or TICKETS_DATA. Weights root: --model-root or TICKETS_MODELS."


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every other bad input."""

    def error(self, message: str) -> None:  # noqa: D401
        self.exit(2, f"tickets: error: {message} (see `{self.prog} --help`)\n")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.2,0.5, got {text!r}") from None


def _common(p: argparse.ArgumentParser, *, schedule: bool = True) -> None:
    g = p.add_argument_group("common options (the same in every command)")
    g.add_argument("--config", metavar="FILE", help="YAML file with any of this command's options; flags win")
    g.add_argument("--out", metavar="DIR", default=None, help="where run directories go (default: runs)")
    g.add_argument("--seed", type=int, help="seed for data subsets, head init, data order, random masks (default 0)")
    g.add_argument("--epochs", type=int, help="fine-tuning epochs per level (default 3)")
    g.add_argument("--train-size", type=int, metavar="N", help="seeded subset of N training examples (default: all)")
    g.add_argument("--limit", type=int, metavar="N", help="evaluate on the first N validation/test examples only")
    g.add_argument("--sparsities", type=_floats, metavar="S,S,…", help="explicit sparsity levels, e.g. 0.2,0.5,0.8")
    g.add_argument("--levels", type=int, metavar="N", help="number of levels of the geometric schedule (default 6)")
    g.add_argument("--rate", type=float, help="fraction pruned per level (default 0.2 geometric; 0.1 linear)")
    g.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    g.add_argument("--data-root", metavar="DIR", help="data root (default: $TICKETS_DATA)")
    g.add_argument("--model-root", metavar="DIR", help="pre-trained weights root (default: $TICKETS_MODELS)")
    g.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    g.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's choice; 1 is fastest for small models on a busy machine)")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, help="default 64 (CNN) / 32 (BERT family)")
    t.add_argument("--optimizer", choices=["sgd", "adamw"], help="default sgd (CNN) / adamw (BERT family)")
    t.add_argument("--lr", type=float, help="peak learning rate; default 0.05 (CNN) / 2e-5 (BERT family)")
    t.add_argument("--weight-decay", type=float, help="default 5e-4 (CNN) / 0 (BERT family)")
    t.add_argument("--lr-schedule", choices=["constant", "step", "cosine", "linear"],
                   help="default cosine (CNN) / linear (BERT family)")
    t.add_argument("--warmup", type=float, help="fraction of steps with linear learning-rate warm-up (default 0)")
    t.add_argument("--max-steps", type=int, help="stop each fine-tune after this many steps")
    t.add_argument("--val-fraction", type=float, help="fraction of train carved off for model selection (default 0.1)")
    t.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    t.add_argument("--max-length", type=int, help="text: max tokens per example (default: per task)")
    t.add_argument("--head", choices=["fresh", "pretrained"],
                   help="task head: fresh (seeded new head, re-drawn identically each level; default) or "
                        "pretrained (keep the shipped head; only on the model's own label space)")


def _attack_flags(g, *, default: str = "pgd (PGD-20)") -> None:
    """--attack/--eps/--alpha/--steps: the evaluation attack (eval; find/transfer with --robust-eval)."""
    g.add_argument("--attack", choices=["pgd", "fgsm"],
                   help="attack for robust accuracy: pgd (L-inf PGD, random start) or fgsm (FGSM with random start); "
                        f"default {default}")
    g.add_argument("--eps", type=float, metavar="E",
                   help="attack budget: L-inf radius in /255 pixel units for images (8 = 8/255), per-token L2 radius "
                        "of the input embeddings for text; default 8; 0 gives exactly the clean figure")
    g.add_argument("--alpha", type=float, metavar="A",
                   help="attack step size, same units as --eps; default eps/4 for PGD (2/255 at eps 8), "
                        "1.25*eps for FGSM")
    g.add_argument("--steps", type=int, metavar="K", help="PGD steps (default 20; FGSM takes one step)")


def _adversarial(p: argparse.ArgumentParser) -> None:
    """Adversarial training (--adv …) and per-run robust evaluation (--robust-eval …) for find and transfer."""
    g = p.add_argument_group("adversarial training (every fine-tune of the run; images: pixel space [0, 1], "
                             "budgets in /255; text: input embeddings, per-token L2)")
    g.add_argument("--adv", choices=["pgd", "fgsm"],
                   help="train on adversarial examples: pgd (PGD-k, random start; Madry et al.) or fgsm (FGSM with "
                        "random start, 'fast adversarial training'; Wong et al.); default: standard training")
    g.add_argument("--adv-eps", type=float, metavar="E",
                   help="training budget (default 8: 8/255 for images; per-token embedding L2 radius for text)")
    g.add_argument("--adv-alpha", type=float, metavar="A",
                   help="training step size (default eps/4 for PGD, 2/255 at eps 8; 1.25*eps for FGSM)")
    g.add_argument("--adv-steps", type=int, metavar="K", help="PGD steps when training (default 10; FGSM: one)")
    g.add_argument("--adv-clean-fraction", type=float, metavar="F",
                   help="fraction of each batch kept clean (default 0: all adversarial)")
    r = p.add_argument_group("robust evaluation (after every level: clean SA and robust RA on the test split, "
                             "model in eval mode)")
    r.add_argument("--robust-eval", action="store_true",
                   help="also report robust accuracy; the attack is --attack/--eps/--alpha/--steps "
                        "(default PGD-20, eps 8/255, alpha 2/255)")
    _attack_flags(r)
    r.add_argument("--robust-limit", type=int, metavar="N",
                   help="attack only the first N test examples (default: as many as the clean test, --limit)")


def _robust_overrides(args: argparse.Namespace, o: dict[str, Any]) -> None:
    """--adv* → train.adversarial, --robust-eval/--attack/… → robust_eval (find, transfer)."""
    adv = {k: getattr(args, a) for k, a in (
        ("attack", "adv"), ("eps", "adv_eps"), ("alpha", "adv_alpha"), ("steps", "adv_steps"),
        ("clean_fraction", "adv_clean_fraction")) if getattr(args, a, None) is not None}
    if adv:
        if "attack" not in adv:
            raise TicketsError("--adv-eps/--adv-alpha/--adv-steps/--adv-clean-fraction need --adv pgd|fgsm")
        if adv["attack"] == "fgsm" and "steps" in adv:
            raise TicketsError("--adv-steps applies to --adv pgd; FGSM takes one step: drop --adv-steps")
        o.setdefault("train", {})["adversarial"] = adv
    rob = {k: getattr(args, a) for k, a in (
        ("attack", "attack"), ("eps", "eps"), ("alpha", "alpha"), ("steps", "steps"), ("limit", "robust_limit"))
        if getattr(args, a, None) is not None}
    if getattr(args, "robust_eval", False):
        if rob.get("attack") == "fgsm" and "steps" in rob:
            raise TicketsError("--steps applies to --attack pgd; FGSM takes one step: drop --steps")
        o["robust_eval"] = rob
    elif rob:
        raise TicketsError("--attack/--eps/--alpha/--steps/--robust-limit set the robust evaluation: add --robust-eval")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tickets", description="Find, transfer and stress-test lottery tickets in pre-trained "
                     "models.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"tickets {__import__('tickets').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    f = sub.add_parser("find", help="draw tickets on a source task (IMP, OMP, random, reverse, reinit)",
                       description="Draw tickets level by level into OUT/find-<hash>/; rerunning resumes.",
                       epilog=EPILOG)
    f.add_argument("--model", help="model name (see `tickets models`), hf:<id-or-path>")
    f.add_argument("--task", help="task name, e.g. cifar10, digits-5-9, glue/sst2")
    f.add_argument("--method", choices=["imp", "omp", "random", "reverse", "reinit"],
                   help="imp: iterative magnitude pruning with rewinding (default); omp: one-shot |θ0|; random; "
                        "reverse: prune the largest |θ0| first; reinit: IMP masks, randomly re-initialised weights")
    f.add_argument("--prunable", help="prunable set: preset cnn | cnn-all | all | bert, optionally with "
                                      "',include=REGEX' / ',exclude=REGEX' (default: the model's preset)")
    f.add_argument("--scope", choices=["global", "layerwise"], help="rank weights globally (default) or per tensor")
    f.add_argument("--schedule", choices=["geometric", "linear"],
                   help="geometric: prune --rate of the remaining per level (CV, default); "
                        "linear: --rate of the original per level (BERT)")
    f.add_argument("--rewind", help="where survivors go back to: theta0 (default), step:K, init")
    _common(f)
    _adversarial(f)

    t = sub.add_parser("transfer", help="fine-tune θ0 under a ticket's mask (or dense) on a target task",
                       description="Transfer a ticket (or, without --ticket, train the dense baseline).",
                       epilog=EPILOG)
    t.add_argument("--ticket", metavar="FILE", help="ticket file (ours, PyTorch-prune state dict, open_lth mask.pth)")
    t.add_argument("--model", help="model name (default: the one recorded in the ticket)")
    t.add_argument("--task", help="target task")
    t.add_argument("--init", choices=["ticket", "theta0", "reinit"],
                   help="start weights: ticket (θ0 unless the ticket carries weights; default), theta0, reinit")
    t.add_argument("--reverse", action="store_true", help="use the complement of the ticket's mask")
    t.add_argument("--save-weights", action="store_true", help="also write the fine-tuned model.safetensors")
    _common(t)
    _adversarial(t)

    e = sub.add_parser("eval", help="score a model (optionally under a ticket) on a split", epilog=EPILOG)
    e.add_argument("--model", required=False, help="model name")
    e.add_argument("--task", required=False, help="task name")
    e.add_argument("--split", default="test", choices=["train", "val", "test"], help="default test")
    e.add_argument("--ticket", metavar="FILE", help="apply this ticket's mask first")
    e.add_argument("--weights", metavar="FILE", help="fine-tuned model.safetensors (from transfer --save-weights)")
    e.add_argument("--json", action="store_true", help="print metrics as JSON")
    _common(e)
    _attack_flags(e.add_argument_group(
        "robust accuracy (with --attack: clean SA and robust RA on the same examples, model in eval mode; "
        "--seed seeds the random starts)"), default="none (clean accuracy only)")

    i = sub.add_parser("inspect", help="print a ticket's metadata and per-tensor sparsity")
    i.add_argument("file", metavar="FILE")

    d = sub.add_parser("demo", help="the whole pipeline on scikit-learn digits, no download (< 3 min on 2 CPUs)")
    d.add_argument("--out", default="tickets-demo", metavar="DIR", help="output directory (default tickets-demo)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    d.add_argument("--quiet", action="store_true")

    r = sub.add_parser("run", help="run a study declared in an experiment file (finds, transfers, dense baselines)",
                       description="Expand EXPERIMENT.yaml (see docs/experiments.md) into find / transfer / dense "
                                   "jobs and run those not done yet; finished runs are reused by their content hash.",
                       epilog=EPILOG)
    r.add_argument("experiment", metavar="EXPERIMENT.yaml")
    r.add_argument("--dry-run", action="store_true", help="list every job with its status (done/partial/todo); run "
                                                          "nothing")
    r.add_argument("--out", metavar="DIR", help="where run directories go (default: the file's `out:`, else runs)")
    r.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    r.add_argument("--threads", type=int, metavar="N", help="torch intra-op CPU threads (e.g. 1 on a shared machine)")
    r.add_argument("--data-root", metavar="DIR", help="data root (default: $TICKETS_DATA)")
    r.add_argument("--model-root", metavar="DIR", help="pre-trained weights root (default: $TICKETS_MODELS)")
    r.add_argument("--no-report", action="store_true", help="do not write the study's report.md at the end")
    r.add_argument("--quiet", action="store_true", help="one line per job only")

    rp = sub.add_parser("report", help="write report.md, plots and CSV/JSON for a study (or a folder of runs)",
                        description="DIR is OUT/study-<name> (from `tickets run`) or any folder of find-*/transfer-* "
                                    "runs. Writes DIR/report.md, PNGs and CSV/JSON of every figure's data.")
    rp.add_argument("dir", metavar="DIR")
    rp.add_argument("--to", metavar="DIR", help="write the report files here instead of DIR")

    dw = sub.add_parser("double-win", help="which tickets are double-win (match dense on SA and RA, standard and "
                                           "adversarial transfer)",
                        description="Read every finished transfer run under DIR (tickets and dense baselines, standard "
                                    "and adversarial fine-tuning, run with --robust-eval) and print, per target task, "
                                    "ticket and sparsity, SA and RA under both regimes against the dense model, and "
                                    "whether the ticket is double-win there (Chen et al., ICML 2022).")
    dw.add_argument("dir", metavar="DIR", help="folder holding transfer-*/ runs (searched recursively)")
    dw.add_argument("--rule", choices=["std", "mean"], default="std",
                    help="matching: ticket mean >= dense mean - 1 std over seeds (std, default) or >= dense mean")
    dw.add_argument("--to", metavar="FILE", help="also write FILE.md, FILE.csv and FILE.json")

    sub.add_parser("models", help="list model names")
    sub.add_parser("tasks", help="list task names")
    return parser


# ---------------------------------------------------------------------------------------------------------
def _overrides(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Flags the user actually gave, shaped like the config they override."""
    o: dict[str, Any] = {}
    for key in ("model", "task", "method", "prunable", "scope", "rewind", "head", "seed", "ticket", "init"):
        if getattr(args, key, None) is not None:
            o[key] = getattr(args, key)
    if getattr(args, "reverse", False):
        o["reverse"] = True
    if getattr(args, "save_weights", False):
        o["save_weights"] = True
    train = {k: getattr(args, a) for k, a in (
        ("epochs", "epochs"), ("batch_size", "batch_size"), ("optimizer", "optimizer"), ("lr", "lr"),
        ("weight_decay", "weight_decay"), ("lr_schedule", "lr_schedule"), ("warmup", "warmup"),
        ("max_steps", "max_steps")) if getattr(args, a, None) is not None}
    if train:
        o["train"] = train
    data = {k: getattr(args, a) for k, a in (
        ("train_size", "train_size"), ("limit", "limit"), ("val_fraction", "val_fraction"),
        ("max_length", "max_length")) if getattr(args, a, None) is not None}
    if getattr(args, "no_augment", False):
        data["augment"] = False
    if data:
        o["data"] = data
    schedule: dict[str, Any] = {}
    if args.sparsities is not None:
        schedule.update(kind="explicit", sparsities=args.sparsities)
    if getattr(args, "schedule", None):
        schedule["kind"] = args.schedule
        if args.schedule == "linear" and args.rate is None:
            schedule["rate"] = 0.1
    if args.levels is not None:
        schedule["levels"] = args.levels
    if args.rate is not None:
        schedule["rate"] = args.rate
    if schedule:
        if command != "find":
            raise TicketsError(f"--sparsities/--levels/--rate/--schedule apply to `tickets find`, not `{command}`")
        o["schedule"] = schedule
    _robust_overrides(args, o)
    return o


def _config(cls: type, args: argparse.Namespace, command: str):
    from tickets.config import from_dict, load_yaml, merge

    base = load_yaml(args.config) if args.config else {}
    # run-time settings may sit in the YAML too; they are not part of the hashed config
    for key in ("out", "device", "data_root", "model_root"):
        if key in base and getattr(args, key, None) in (None, "auto"):
            setattr(args, key, base[key])
        base.pop(key, None)
    where = args.config or "options"
    return from_dict(cls, merge(base, _overrides(args, command)), where)


def _run_kwargs(args: argparse.Namespace) -> dict:
    return dict(out=args.out or "runs", device=args.device, data_root=args.data_root, model_root=args.model_root,
                progress=not args.quiet)


def cmd_find(args: argparse.Namespace) -> int:
    from tickets.config import FindConfig
    from tickets.verbs.find import find_tickets

    cfg = _config(FindConfig, args, "find")
    result = find_tickets(cfg, **_run_kwargs(args))
    print(f"run: {result.path}")
    robust = any("robust" in r for r in result.levels)
    print(f"{'level':>5}  {'sparsity':>8}  {'val':>8}  {'test':>8}  " + ("robust  " if robust else "") + "ticket")
    for r in result.levels:
        m = r["primary_metric"]
        ra = f"{r['robust']['robust_accuracy']:>6.4f}  " if "robust" in r else ("        " if robust else "")
        print(f"{r['level']:>5}  {r['sparsity']:>8.2%}  {r['val'][m]:>8.4f}  {r['test'][m]:>8.4f}  {ra}{r['ticket']}")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from tickets.config import TransferConfig
    from tickets.verbs.transfer import transfer

    cfg = _config(TransferConfig, args, "transfer")
    if cfg.ticket and not cfg.model:
        cfg.model = "auto"
    res = transfer(cfg, **_run_kwargs(args))
    m = res.metrics
    print(f"run: {res.path}")
    print(f"sparsity {m['sparsity']:.2%}  val {m['primary_metric']} {m['val'][m['primary_metric']]:.4f}  "
          f"test {m['primary_metric']} {res.score:.4f}")
    if m.get("robust"):
        from tickets.verbs.evaluation import format_robust

        print(format_robust(m["robust"]))
    return 0


def _eval_attack(args: argparse.Namespace):
    """`tickets eval --attack …` → RobustEvalConfig (None without --attack)."""
    from tickets.config import RobustEvalConfig

    given = {k: getattr(args, k) for k in ("eps", "alpha", "steps") if getattr(args, k, None) is not None}
    if args.attack is None:
        if given:
            raise TicketsError("--eps/--alpha/--steps set the attack: add --attack pgd|fgsm")
        return None
    if args.attack == "fgsm" and "steps" in given:
        raise TicketsError("--steps applies to --attack pgd; FGSM takes one step: drop --steps")
    return RobustEvalConfig(attack=args.attack, **given)


def cmd_eval(args: argparse.Namespace) -> int:
    from tickets.config import DataConfig, load_yaml
    from tickets.verbs.evaluation import evaluate_model, format_metrics

    if args.sparsities is not None or args.levels is not None or args.rate is not None:
        raise TicketsError("--sparsities/--levels/--rate apply to `tickets find`, not `eval`")
    base = load_yaml(args.config) if args.config else {}
    model, task = args.model or base.get("model"), args.task or base.get("task")
    if not model or not task:
        raise TicketsError("eval needs a model and a task: pass --model M --task T")
    data = DataConfig(augment=False, limit=args.limit, max_length=args.max_length)
    if args.train_size is not None:
        data.train_size = args.train_size
    robust = _eval_attack(args)
    metrics = evaluate_model(model, task, split=args.split, ticket=args.ticket, weights=args.weights, data=data,
                             seed=args.seed or 0, device=args.device, data_root=args.data_root,
                             model_root=args.model_root, batch_size=args.batch_size or 256,
                             progress=not args.quiet, robust=robust)
    print(json.dumps(metrics, indent=2, sort_keys=True) if args.json else format_metrics(metrics))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from tickets.ticket import describe, load_ticket

    print(describe(load_ticket(args.file)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tickets.verbs.demo import run_demo

    report = run_demo(out=args.out, seed=args.seed, device=args.device, progress=not args.quiet)
    print(f"report: {report}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tickets.study.experiment import run_experiment

    return run_experiment(args.experiment, out=args.out, dry_run=args.dry_run, device=args.device,
                          data_root=args.data_root, model_root=args.model_root, progress=not args.quiet,
                          report=not args.no_report)


def cmd_report(args: argparse.Namespace) -> int:
    from tickets.study.report import write_report

    print(f"report: {write_report(args.dir, to=args.to)}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tickets.models import model_names

    print("\n".join(model_names()))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from tickets.tasks import task_names

    print("\n".join(task_names()))
    return 0


def cmd_double_win(args: argparse.Namespace) -> int:
    from tickets.study.robust import double_win_report

    print(double_win_report(args.dir, rule=args.rule, out=args.to), end="")
    return 0


COMMANDS = {"find": cmd_find, "transfer": cmd_transfer, "eval": cmd_eval, "inspect": cmd_inspect,
            "demo": cmd_demo, "run": cmd_run, "report": cmd_report, "models": cmd_models, "tasks": cmd_tasks}
COMMANDS["double-win"] = cmd_double_win


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return int(exc.code or 0)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return COMMANDS[args.command](args)
    except TicketsError as exc:
        if os.environ.get("TICKETS_DEBUG"):
            raise
        print(f"tickets: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tickets: interrupted; finished levels are kept — rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
