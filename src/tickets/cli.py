"""The `tickets` command. The only module that knows argv.

Every option of ``find``, ``transfer`` and ``eval`` is generated from the config dataclasses in
``tickets.config`` (flag, type, choices, help), and so is every key a ``--config FILE.yaml`` may hold: the same
names, checked the same way, flags winning over the file. Bad input ends with one line,
``tickets: error: <problem>: <fix>``, and exit code 2; no traceback, whatever raised it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable

from tickets.errors import TicketsError

EPILOG = "Data root: --data-root or TICKETS_DATA. Weights root: --model-root or TICKETS_MODELS."
SEP = "__"  # argparse dest separator for nested config keys (train__epochs)
ENABLE = "@enable"


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every other bad input."""

    _command: str | None = None  # the subcommand being parsed, for hints about flags it does not take

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        # argparse reports a subcommand's unknown flags from the top-level parser: keep which command it was
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self._command = getattr(parsed, "command", None)
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def error(self, message: str) -> None:  # noqa: D401
        hint = _other_command_hint(message, self._command)
        prog = f"tickets {self._command}" if self._command else self.prog
        self.exit(2, f"tickets: error: {message}{hint} (see `{prog} --help`)\n")


# Flags people reach for under another name: report and double-win write with --to, find and the others with --out
_SYNONYMS = {"--out": ("--to",), "--to": ("--out",), "--output": ("--out", "--to"), "--output-dir": ("--out", "--to")}


def _other_command_hint(message: str, command: str | None = None) -> str:
    """For ``unrecognized arguments: --levels 3``: the flag this command takes instead (``report --out`` →
    ``--to``), or which command takes that flag."""
    if not message.startswith("unrecognized arguments:"):
        return ""
    flags = [w.split("=", 1)[0] for w in message.split(":", 1)[1].split() if w.startswith("--")]
    own = _FLAGS_BY_COMMAND.get(command or "", set())
    for flag in flags:
        alternative = next((alt for alt in _SYNONYMS.get(flag, ()) if alt in own), None)
        if alternative:
            value = _METAVARS.get((command or "", alternative))
            use = f"{alternative} {value}" if value else alternative
            return f"; `tickets {command}` takes {alternative} for that: use {use}"
    for flag in flags:
        owners = [name for name, flags_of in _FLAGS_BY_COMMAND.items() if flag in flags_of]
        if owners:
            return f"; {flag} applies to `tickets {owners[0]}`"
    return ""


_FLAGS_BY_COMMAND: dict[str, set[str]] = {}
_METAVARS: dict[tuple[str, str], str] = {}  # (command, flag) → its metavar, for the hints


# ----------------------------------------------------------------------------------------------------------------
# flags generated from the config dataclasses
# ----------------------------------------------------------------------------------------------------------------
def _arg_type(inner: Any, meta: dict) -> Callable[[str], Any]:
    parse = meta.get("parse")

    def convert(text: str) -> Any:
        if not text.strip():  # given explicitly, an empty value would otherwise fall back to the default unseen
            raise argparse.ArgumentTypeError("empty value: give one, or leave the flag out for the default")
        try:
            if parse is not None:
                return parse(text)
            return inner(text)
        except (ValueError, TicketsError) as exc:
            what = {int: "an integer", float: "a number"}.get(inner, "a value")
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}" if not isinstance(exc, TicketsError)
                                             else str(exc)) from None
    convert.__name__ = getattr(inner, "__name__", "value")
    return convert


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, path: tuple = (), prefix: str = "",
                     group: Any = None, command: str = "", skip: str | None = None,
                     only: set[str] | None = None) -> None:
    """Add one flag per CLI field of config dataclass ``cls`` (recursively), with ``dest`` = the key path joined
    by ``__`` and default SUPPRESS, so only flags the user gave appear in the parsed namespace. ``only``: just
    these fields of ``cls`` (``demo`` takes ``--threads`` of the run options)."""
    from tickets.hparams import choices_of, default_of, fields_of, help_of, unwrap_optional

    target = group or parser
    for f, hint in fields_of(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name == skip or (only is not None and f.name not in only):
            continue
        inner, optional = unwrap_optional(hint)
        dest = SEP.join(path + (f.name,))
        if dataclasses.is_dataclass(inner):
            sub = parser.add_argument_group(help_of(f) or f.name)
            child_prefix = prefix + (meta.get("prefix") or "")
            skip = None
            if optional:
                enable, enable_field = meta["enable"], meta.get("enable_field")
                if enable_field:
                    ef = next(x for x, _ in fields_of(inner) if x.name == enable_field)
                    sub.add_argument(enable, dest=dest + SEP + enable_field, default=argparse.SUPPRESS,
                                     choices=choices_of(ef), help=help_of(ef))
                    skip = enable_field
                else:
                    sub.add_argument(enable, dest=dest + SEP + ENABLE, action="store_true",
                                     default=argparse.SUPPRESS, help=help_of(f))
                _FLAGS_BY_COMMAND.setdefault(command, set()).add(enable)
            add_config_flags(parser, inner, path=path + (f.name,), prefix=child_prefix, group=sub, command=command,
                             skip=skip)
            continue
        flag = meta.get("flag") or f"--{prefix}{f.name.replace('_', '-')}"
        _FLAGS_BY_COMMAND.setdefault(command, set()).add(flag)
        default = default_of(f)
        text = help_of(f).replace("%", "%%")
        if inner is bool:
            if default is True:
                flag = f"--no-{prefix}{f.name.replace('_', '-')}"
                target.add_argument(flag, dest=dest, action="store_false", default=argparse.SUPPRESS,
                                    help=f"do not: {text}")
            else:
                target.add_argument(flag, dest=dest, action="store_true", default=argparse.SUPPRESS, help=text)
            _FLAGS_BY_COMMAND[command].add(flag)
            continue
        target.add_argument(flag, dest=dest, default=argparse.SUPPRESS, type=_arg_type(inner, meta),
                            choices=None if meta.get("parse") else choices_of(f),
                            metavar=None if choices_of(f) else (meta.get("metavar") or f.name.upper()),
                            help=text)


def config_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags the user gave, shaped like the config they override (nested dicts). An optional block's own
    flags without its enabling flag are an error."""
    from tickets.hparams import fields_of, unwrap_optional

    given = {k: v for k, v in vars(args).items() if SEP in k or k in {f.name for f, _ in fields_of(cls)}}
    out: dict[str, Any] = {}
    for key, value in given.items():
        parts = key.split(SEP)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if parts[-1] != ENABLE:
            node[parts[-1]] = value
    # optional blocks: their sub-flags need the enabling flag
    for f, hint in fields_of(cls):
        inner, optional = unwrap_optional(hint)
        if dataclasses.is_dataclass(inner):
            _check_enabled(args, f, inner, optional, (f.name,), out, f.metadata.get("prefix") or "")
    return out


def _check_enabled(args, f, inner, optional, path, out, prefix) -> None:
    from tickets.hparams import fields_of, help_of, unwrap_optional

    key = SEP.join(path)
    if optional and f.metadata.get("enable"):
        enable_field = f.metadata.get("enable_field")
        enabled = hasattr(args, key + SEP + ENABLE) or (enable_field and hasattr(args, key + SEP + enable_field))
        block = out
        for p in path:
            block = block.get(p, {}) if isinstance(block, dict) else {}
        if block and not enabled:
            flags = [sub.metadata.get("flag") or f"--{prefix}{sub.name.replace('_', '-')}"
                     for sub, _ in fields_of(inner) if sub.name in block]
            enable = f.metadata["enable"]
            raise TicketsError(f"{', '.join(flags)} need {enable} ({help_of(f) or f.name}): add {enable}")
    for sub, hint in fields_of(inner):
        sub_inner, sub_optional = unwrap_optional(hint)
        if dataclasses.is_dataclass(sub_inner):
            _check_enabled(args, sub, sub_inner, sub_optional, path + (sub.name,), out,
                           prefix + (sub.metadata.get("prefix") or ""))


def _run_flags(p: argparse.ArgumentParser, command: str) -> None:
    from tickets.config import RunOptions

    g = p.add_argument_group("common options (every command; also valid as keys of --config)")
    g.add_argument("--config", metavar="FILE", help="YAML file with any of this command's options; flags win")
    g.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE (a module name on PYTHONPATH, or a path to a .py file) first so its registered "
                        "models, tasks, methods or patterns are available (also $TICKETS_PLUGINS)")
    add_config_flags(p, RunOptions, group=g, command=command)


# ----------------------------------------------------------------------------------------------------------------
# the parser
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from tickets import __version__
    from tickets.config import EvalConfig, FindConfig, PretrainConfig, RunOptions, TransferConfig

    parser = _Parser(prog="tickets", description="Find, transfer and stress-test lottery tickets in pre-trained "
                     "models.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"tickets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for name, cls, help_text, description in (
        ("find", FindConfig, "draw tickets on a source task (IMP, OMP, random, reverse, reinit)",
         "Draw tickets level by level into OUT/find-<hash>/; rerunning resumes."),
        ("transfer", TransferConfig, "fine-tune θ0 under a ticket's mask (or dense) on a target task",
         "Transfer a ticket (or, without --ticket, train the dense baseline)."),
        ("eval", EvalConfig, "score a model (optionally under a ticket and an attack) on a split",
         "Score a shipped or fine-tuned model on one split; with --attack also its robust accuracy."),
        ("pretrain", PretrainConfig, "dense pre-training (supervised, adversarial, SimCLR, MoCo v2) into a θ0 "
         "weights file", "Train a model densely on an upstream objective into OUT/pretrain-<hash>/model.safetensors "
         "(pass it to --weights); rerunning resumes."),
    ):
        p = sub.add_parser(name, help=help_text, description=description, epilog=EPILOG)
        add_config_flags(p, cls, command=name)
        _run_flags(p, name)

    i = sub.add_parser("inspect", help="print a ticket's metadata and per-tensor sparsity")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--model", help="also report sparsity over all parameters of this model")

    x = sub.add_parser("export", help="write a ticket's mask for other tools, or the model under it (masked or "
                                      "compact; safetensors, ONNX, torch.export)",
                       description="With --to: the mask alone, as torch.nn.utils.prune buffers (torch-prune), open_lth "
                                   "mask.pth (open-lth) or NNI masks (nni). Otherwise the model the ticket records "
                                   "(--model overrides) with its registry weights or --weights FILE, pruned by the "
                                   "ticket (--compact: physically smaller; structured patterns), as --format "
                                   "safetensors|onnx|pt2 into the folder --out. See docs/formats.md.",
                       epilog=EPILOG)
    x.add_argument("ticket", metavar="TICKET", help="ticket file (ours, PyTorch-prune, open_lth or NNI)")
    x.add_argument("--to", choices=["torch-prune", "open-lth", "nni"], help="export the mask in this tool's layout")
    x.add_argument("--out", required=True, metavar="PATH", help="file (--to) or folder (model export) to write")
    x.add_argument("--format", dest="fmt", choices=["safetensors", "onnx", "pt2"], default=None,
                   help="model export format (default safetensors)")
    x.add_argument("--compact", action="store_true", help="remove the pruned channels / heads / neurons")
    x.add_argument("--model", help="model name (default: the one the ticket records)")
    x.add_argument("--weights", metavar="FILE", help="checkpoint to export instead of the registry weights (θ0)")
    x.add_argument("--model-root", metavar="DIR", help="pre-trained weights root (or TICKETS_MODELS)")
    x.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first")
    x.add_argument("--quiet", action="store_true", help="warnings only")

    tw = sub.add_parser("ticket-from-weights", help="turn the exact zeros of a pre-sparsified checkpoint into a ticket",
                        description="Record weight != 0 over the prunable set of MODEL (with --weights FILE, or its "
                                    "own weights) as a ticket, so `tickets transfer --ticket OUT --weights FILE` "
                                    "fine-tunes with the zeros kept at zero.", epilog=EPILOG)
    tw.add_argument("--model", required=True, help="model name (tickets models), e.g. hf:<folder> or resnet20-cifar10")
    tw.add_argument("--weights", metavar="FILE", help="the sparse checkpoint (default: the model's own weights)")
    tw.add_argument("--prunable", metavar="SET", help="prunable set, e.g. bert or 'all,exclude=fc\\..*' "
                                                      "(default: the model's preset)")
    tw.add_argument("--out", required=True, metavar="FILE", help="ticket file to write (.safetensors)")
    tw.add_argument("--model-root", metavar="DIR", help="pre-trained weights root (or TICKETS_MODELS)")
    tw.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first")
    tw.add_argument("--quiet", action="store_true", help="warnings only")

    d = sub.add_parser("demo", help="the whole pipeline on scikit-learn digits, no download (< 1 min on 2 CPUs)")
    d.add_argument("--out", default="tickets-demo", metavar="DIR", help="output directory (default tickets-demo)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    d.add_argument("--quiet", action="store_true")
    add_config_flags(d, RunOptions, command="demo", only={"threads"})

    r = sub.add_parser("run", help="run a study declared in an experiment file (finds, transfers, dense baselines)",
                       description="Expand EXPERIMENT.yaml (see docs/experiments.md) into find / transfer / dense "
                                   "jobs and run those not done yet; finished runs are reused by their content hash.",
                       epilog=EPILOG)
    r.add_argument("experiment", metavar="EXPERIMENT.yaml")
    r.add_argument("--dry-run", action="store_true", help="list every job with its status (done/partial/todo); run "
                                                          "nothing")
    r.add_argument("--executor", default="local",
                   help="how jobs run: local (this process, default), ray (Ray tasks; pip install -e \".[ray]\"), "
                        "slurm (Slurm jobs via submitit; pip install -e \".[slurm]\") or another registered executor")
    r.add_argument("--address", metavar="auto|HOST:PORT",
                   help="ray: the cluster to join (auto: the one `ray start` runs here; default: start Ray on this "
                        "machine, or $RAY_ADDRESS)")
    r.add_argument("--retries", type=int, metavar="N",
                   help="ray, slurm: run a crashed job (killed worker, unexpected error) up to N more times "
                        "(default 2 on ray, 1 on slurm); bad input (a tickets error) is never retried")
    r.add_argument("--no-report", action="store_true", help="do not write the study's report.md at the end")
    _run_flags(r, "run")

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

    for name, what in LISTINGS.items():
        ls = sub.add_parser(name, help=f"list {what[0]}")
        ls.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first")
    for name, p in sub.choices.items():  # every command's flags, hand-written ones too, for usage-error hints
        for action in p._actions:
            _FLAGS_BY_COMMAND.setdefault(name, set()).update(action.option_strings)
            if isinstance(action.metavar, str):
                _METAVARS.update({(name, o): action.metavar for o in action.option_strings})
    return parser


LISTINGS = {"models": ("model names", "tickets.models:MODELS"), "tasks": ("task names", "tickets.tasks:TASKS"),
            "methods": ("ticket-drawing methods", "tickets.methods:METHODS"),
            "patterns": ("sparsity patterns", "tickets.patterns:PATTERNS")}


# ----------------------------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------------------------
def _config(cls: type, args: argparse.Namespace):
    """(config, run options) from ``--config`` merged with the flags given (flags win)."""
    from tickets.config import RunOptions, load_config, load_yaml_document
    from tickets.hparams import merge

    doc = load_yaml_document(args.config) if args.config else None
    flags = config_overrides(args, cls)
    flags.update(config_overrides(args, RunOptions))
    # errors in keys the file set cite it as <file>:<line>:
    return load_config(cls, merge(doc.data if doc else {}, flags), "", doc=doc, flags=flags)


def _setup(run) -> dict:
    """Apply the run options (threads, logging; under torchrun the process group) and return the keyword
    arguments of a verb."""
    import logging

    from tickets.log import enable_console
    from tickets.training import parse_sinks
    from tickets.training.distributed import init_from_environment

    ranked = init_from_environment(run.device)
    from tickets.runtime import is_main_process

    if ranked and not is_main_process():
        # under torchrun only rank 0 speaks: the other ranks' results, tables and warnings are rank 0's again
        # (errors still print, prefixed by the failing command's one line)
        enable_console(logging.ERROR)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    else:
        enable_console(logging.WARNING if run.quiet else logging.INFO)
    _set_threads(run.threads)
    return dict(out=run.out or "runs", device=run.device, data_root=run.data_root, model_root=run.model_root,
                progress=not run.quiet, log_to=parse_sinks(run.log_to))


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_find(args: argparse.Namespace) -> int:
    from tickets.config import FindConfig
    from tickets.verbs.find import find_tickets

    cfg, run = _config(FindConfig, args)
    result = find_tickets(cfg, **_setup(run))
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

    cfg, run = _config(TransferConfig, args)
    res = transfer(cfg, **_setup(run))
    m = res.metrics
    print(f"run: {res.path}")
    print(f"sparsity {m['sparsity']:.2%}  val {m['primary_metric']} {m['val'][m['primary_metric']]:.4f}  "
          f"test {m['primary_metric']} {res.score:.4f}")
    if m.get("robust"):
        from tickets.verbs.evaluation import format_robust

        print(format_robust(m["robust"]))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tickets.config import EvalConfig
    from tickets.verbs.evaluation import evaluate_model, format_metrics

    cfg, run = _config(EvalConfig, args)
    kw = _setup(run)
    metrics = evaluate_model(cfg, device=kw["device"], data_root=kw["data_root"], model_root=kw["model_root"],
                             progress=kw["progress"])
    print(json.dumps(metrics, indent=2, sort_keys=True) if cfg.json else format_metrics(metrics))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from tickets.config import PretrainConfig
    from tickets.verbs.pretrain import pretrain

    cfg, run = _config(PretrainConfig, args)
    res = pretrain(cfg, **_setup(run))
    m = res.metrics
    print(f"run: {res.path}")
    print(f"weights: {res.weights}")
    for split in ("val", "test"):
        scores = m[split]
        keys = [m["primary_metric"]] + sorted(k for k in scores if k not in (m["primary_metric"], "examples"))
        print(f"{split} ({scores.get('examples', '?')} examples): " + ", ".join(
            f"{k} {scores[k]:.4f}" for k in keys if isinstance(scores.get(k), (int, float))))
    if m.get("robust"):
        from tickets.verbs.evaluation import format_robust

        print(format_robust(m["robust"]))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from tickets.ticket import describe, load_ticket

    ticket = load_ticket(args.file)
    model = None
    if args.model:
        from tickets.models import load_model

        model = load_model(args.model, pretrained=False).module
    print(describe(ticket, model), end="")
    from tickets.diagnostics import sparsity_warnings

    for warning in sparsity_warnings(ticket.mask):
        print(f"warning: {warning}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import logging

    from tickets.log import enable_console

    enable_console(logging.WARNING if args.quiet else logging.INFO)
    if args.to:
        if args.fmt or args.compact or args.weights or args.model:
            raise TicketsError("--to exports the mask alone: drop --format / --compact / --weights / --model, or "
                               "drop --to to export the model")
        from tickets.verbs.export import export_masks

        for path in export_masks(args.ticket, args.to, args.out):
            print(f"wrote {path}")
        return 0
    from tickets.verbs.export import export_model

    record = export_model(args.ticket, args.out, fmt=args.fmt or "safetensors", compact=args.compact,
                          model=args.model, weights=args.weights, model_root=args.model_root)
    what = "compact" if record["compact"] else "masked"
    p = record["parameters"]
    diff = f", max |program - model| {record['max_abs_diff']:.2e}" if record.get("max_abs_diff") is not None else ""
    sparsity = record["ticket"]["sparsity"]
    size = (f"{p['exported']:,} of {p['dense']:,} parameters" if record["compact"] else
            f"{p['dense']:,} parameters, {100 * sparsity:.1f}% of the prunable set zeroed")
    print(f"{what} {record['model']} ({record['pattern']}, {size}{diff}) -> {args.out}: {', '.join(record['files'])}")
    return 0


def cmd_ticket_from_weights(args: argparse.Namespace) -> int:
    import logging

    from tickets.log import enable_console
    from tickets.verbs.ticket_from_weights import ticket_from_weights

    enable_console(logging.WARNING if args.quiet else logging.INFO)
    ticket = ticket_from_weights(args.model, weights=args.weights, prunable=args.prunable, out=args.out,
                                 model_root=args.model_root)
    m = ticket.mask
    print(f"ticket: {args.out}: sparsity {m.sparsity:.4f} over the prunable set ({len(m)} tensors, "
          f"{m.num_total:,} weights; {m.num_pruned:,} zeros)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import logging

    from tickets.log import enable_console
    from tickets.verbs.demo import run_demo

    enable_console(logging.WARNING if args.quiet else logging.INFO)
    if getattr(args, "threads", None) is not None:
        from tickets.config import RunOptions
        from tickets.hparams import from_dict

        _set_threads(from_dict(RunOptions, {"threads": args.threads}, "").threads)  # bounds checked as for find
    report = run_demo(out=args.out, seed=args.seed, device=args.device, progress=not args.quiet)
    print(f"report: {report}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tickets.study.execute import run_experiment

    run = _run_options(args)
    kw = _setup(run)
    options = {k: getattr(args, k) for k in ("address", "retries") if getattr(args, k) is not None}
    return run_experiment(args.experiment, out=run.out, dry_run=args.dry_run, device=kw["device"],
                          data_root=kw["data_root"], model_root=kw["model_root"], progress=kw["progress"],
                          report=not args.no_report, executor=args.executor, executor_options=options,
                          log_to=kw["log_to"])


def _run_options(args: argparse.Namespace):
    from tickets.config import RunOptions, load_yaml_document, locate
    from tickets.hparams import ConfigError, from_dict, merge

    doc = load_yaml_document(args.config) if args.config else None
    flags = config_overrides(args, RunOptions)
    try:
        return from_dict(RunOptions, merge(doc.data if doc else {}, flags), "")
    except ConfigError as exc:
        raise locate(exc, doc, flags) from None


def cmd_report(args: argparse.Namespace) -> int:
    from tickets.study.report import write_report

    print(f"report: {write_report(args.dir, to=args.to)}")
    return 0


def cmd_double_win(args: argparse.Namespace) -> int:
    from tickets.study.robust import double_win_report

    print(double_win_report(args.dir, rule=args.rule, out=args.to), end="")
    return 0


def cmd_listing(args: argparse.Namespace) -> int:
    import importlib

    module, _, attr = LISTINGS[args.command][1].partition(":")
    print(getattr(importlib.import_module(module), attr).listing_text())
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "find": cmd_find, "transfer": cmd_transfer, "eval": cmd_eval, "pretrain": cmd_pretrain, "inspect": cmd_inspect,
    "demo": cmd_demo, "run": cmd_run, "report": cmd_report, "double-win": cmd_double_win, "export": cmd_export,
    "ticket-from-weights": cmd_ticket_from_weights,
    **{name: cmd_listing for name in LISTINGS},
}


def _os_error(exc: OSError) -> str:
    """One line for a file-system error: the path, the cause and what to do."""
    import errno

    fixes = {errno.ENOSPC: "free disk space or choose another --out", errno.EDQUOT: "free quota or choose another --out",
             errno.EROFS: "choose a writable --out", errno.EACCES: "choose a writable --out or fix the permissions",
             errno.EPERM: "choose a writable --out or fix the permissions",
             errno.EFBIG: "raise the file-size limit (ulimit -f) or choose another --out",
             errno.ENOTDIR: "--out must be a directory, not a file", errno.EEXIST: "--out must be a directory"}
    where = exc.filename or "a file"
    cause = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot write {where} ({cause}): {fixes.get(exc.errno, 'check the path, its permissions and free space')}"


def _plugins_in(argv: list[str]) -> list[str]:
    """``--plugin M`` / ``--plugin=M`` values, read before the parser is built (plugins add choices)."""
    out = []
    for i, word in enumerate(argv):
        if word == "--plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif word.startswith("--plugin="):
            out.append(word.split("=", 1)[1])
    return out


def main(argv: list[str] | None = None) -> int:
    from tickets.registry import load_plugins

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        load_plugins(_plugins_in(argv))
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
            return int(exc.code or 0)
        return COMMANDS[args.command](args)
    except TicketsError as exc:
        if os.environ.get("TICKETS_DEBUG"):
            raise
        print(f"tickets: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tickets: interrupted; finished levels are kept — rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tickets inspect FILE | head`: the reader left; not an error
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except OSError as exc:  # the file system said no: name the path, the cause and the fix
        if os.environ.get("TICKETS_DEBUG"):
            raise
        print(f"tickets: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # not a known kind of bad input: still one line, and how to get the details
        if os.environ.get("TICKETS_DEBUG"):
            raise
        from tickets.statedict import is_load_error, load_error_detail

        if is_load_error(exc):  # torch's load_state_dict: a weights file that does not fit the model
            print(f"tickets: error: weights do not fit the model ({load_error_detail(exc)}): pass weights saved "
                  "from this model for this task", file=sys.stderr)
            return 2
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"tickets: error: unexpected {type(exc).__name__}: {text} (rerun with TICKETS_DEBUG=1 for the "
              "traceback, and report it if the input looks right)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
