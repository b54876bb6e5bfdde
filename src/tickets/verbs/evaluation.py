"""`tickets eval`: score a pre-trained or fine-tuned model, optionally under a ticket, on one split."""

from __future__ import annotations

from pathlib import Path

import torch

from tickets.config import EvalConfig, resolve_attack, validate_eval
from tickets.errors import TicketsError
from tickets.fileio import require_weights_file
from tickets.log import get_logger
from tickets.verbs.prepare import Prepared, prepare
from tickets.ticket import load_ticket
from tickets.training.evaluate import evaluate
from tickets.runtime import resolve_device

logger = get_logger(__name__)


def prepare_with_weights(cfg: EvalConfig, *, data_root: str | Path | None = None,
                         model_root: str | Path | None = None, need_head: bool = True) -> Prepared:
    """``cfg.model`` on ``cfg.task`` with the weights of ``cfg.weights`` loaded: the loader of ``find`` /
    ``transfer --weights`` (``tickets.statedict.load_checkpoint``: safetensors or a torch state dict, nested or
    not, wrapper prefixes resolved), into a model whose head has the task's size, so a fine-tuned head loads too.
    The loader's notes (the prefix it stripped, …) are logged. ``need_head``: the file's head must fit the task
    (scoring the head); TicketsError naming the head tensor, both shapes and the task the file records otherwise."""
    from tickets.models import load_model, model_family
    from tickets.statedict import load_checkpoint, safetensors_metadata

    require_weights_file(cfg.weights)
    # Hugging Face models take a checkpoint on top of their own folder; other models start from their seeded
    # random init, so no shipped weights are needed
    spec = load_model(cfg.model, model_root=model_root, pretrained=model_family(cfg.model) == "transformer")
    prepared = prepare(spec, cfg.task, model_id=cfg.model, head="fresh", seed=cfg.seed, data=cfg.data,
                       data_root=data_root, model_root=model_root)
    heads = tuple(prepared.spec.head)
    report = load_checkpoint(prepared.model, cfg.weights, head=heads,
                             what=f"weights file {str(cfg.weights)!r} for {cfg.model}")
    if need_head and report.fresh:
        task = prepared.task.name
        recorded = safetensors_metadata(cfg.weights).get("task")
        if report.head_mismatch is not None:
            key, theirs, ours = report.head_mismatch
            fix = (f"the file records task {recorded}: evaluate it with --task {recorded}"
                   if recorded and recorded != task else
                   f"evaluate it on the task it was fine-tuned for (a {theirs[0]}-output head), or score its "
                   "features with --probe knn")
            raise TicketsError(f"weights file {cfg.weights} does not fit {task}: its head {key!r} has shape {theirs} "
                               f"but {task}'s head needs {ours}: {fix}")
        raise TicketsError(f"weights file {cfg.weights} holds no head for {task} ({', '.join(heads)} absent or "
                           "incomplete, e.g. a pre-trained encoder), so eval would score a random head: score its "
                           f"features with --probe knn (or linear), or fine-tune a head with `tickets transfer "
                           f"--weights {cfg.weights} --task {task} --save-weights`")
    for note in report.notes:
        logger.info("weights %s: %s", Path(cfg.weights).name, note)
    prepared.spec.info.update(report.info)
    return prepared


def evaluate_model(
    cfg: EvalConfig,
    *,
    device: str = "auto",
    data_root: str | Path | None = None,
    model_root: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """Metrics of ``cfg.model`` on ``cfg.task`` / ``cfg.split`` (the task's metrics plus ``examples``); with
    ``cfg.robust``, also ``metrics["robust"]`` (SA and RA under that attack, see
    ``training.attacks.robust_evaluate``; random starts seeded by ``cfg.seed``). ``cfg.data.limit`` scores the
    first N examples only.

    Without ``cfg.weights`` the shipped head is used, which only makes sense on the model's own label space;
    with ``weights`` (a fine-tuned model.safetensors, or any checkpoint layout ``--weights`` reads: see
    ``prepare_with_weights``) a head of the task's size is built and loaded from the file.
    TicketsError for a missing model/task, a head that does not fit, or weights / ticket for another model."""
    validate_eval(cfg)
    data = cfg.data
    dev = resolve_device(device)  # a bad --device is reported before any loading
    if cfg.probe:
        return probe_model(cfg, device=dev, data_root=data_root, model_root=model_root)
    if cfg.weights:
        prepared = prepare_with_weights(cfg, data_root=data_root, model_root=model_root)
    else:
        from tickets.models import load_model

        spec = load_model(cfg.model, model_root=model_root)  # loaded once, checked here, then fitted by prepare
        if spec.pretrained_task != cfg.task:
            shipped = spec.pretrained_task
            raise TicketsError(
                f"{cfg.model}'s shipped head predicts {shipped or 'nothing (it has no trained head)'}, not "
                f"{cfg.task}: pass --weights model.safetensors from `tickets transfer --task {cfg.task} "
                "--save-weights`"
            )
        prepared = prepare(spec, cfg.task, model_id=cfg.model, head="pretrained", seed=cfg.seed, data=data,
                           data_root=data_root, model_root=model_root)
    mask = None
    if cfg.ticket:
        mask = load_ticket(cfg.ticket).fit(prepared.model, head=prepared.spec.head)  # prefixes, head entries
    metrics = evaluate(prepared.model, prepared.task, cfg.split, device=dev, batch_size=cfg.batch_size,
                       limit=data.limit, mask=mask, progress=progress)
    metrics["split"] = cfg.split
    metrics["task"] = prepared.task.name
    metrics["model"] = prepared.model_id
    metrics["primary_metric"] = prepared.task.primary_metric
    if cfg.weights:
        metrics["weights"] = str(cfg.weights)
    if mask is not None:
        metrics["sparsity"] = mask.sparsity
    if cfg.robust is not None:
        from tickets.training.attacks import robust_evaluate

        r = resolve_attack(cfg.robust, "robust")
        metrics["robust"] = robust_evaluate(
            prepared.model, prepared.task, cfg.split, attack=r.attack, eps=r.eps, alpha=r.alpha, steps=r.steps,
            device=dev, batch_size=cfg.batch_size, limit=r.limit if r.limit is not None else data.limit, mask=mask,
            seed=cfg.seed, progress=progress)
    return metrics


def probe_model(cfg: EvalConfig, *, device: str | torch.device = "auto", data_root: str | Path | None = None,
                model_root: str | Path | None = None) -> dict:
    """``tickets eval --probe knn|linear``: score the encoder of ``cfg.model`` (from ``cfg.weights`` if given —
    any checkpoint layout ``--weights`` reads, its head ignored — under ``cfg.ticket``'s mask if given) by its
    frozen features on the labelled ``cfg.task``: weighted kNN or a linear probe (``training.probe``), the task's
    training split (after the validation carve; ``--val-size 0`` keeps all of it) as bank / probe training set,
    ``cfg.split`` (first ``data.limit`` examples) scored. TicketsError with an attack, or for a task without
    image labels."""
    from tickets.models import load_model
    from tickets.training.probe import KNN_TEMPERATURE, probe_task

    if cfg.robust is not None:
        raise TicketsError("--probe scores frozen features and --attack the model's head: run them separately")
    dev = resolve_device(device)
    if cfg.weights:
        prepared = prepare_with_weights(cfg, data_root=data_root, model_root=model_root, need_head=False)
    else:
        prepared = prepare(load_model(cfg.model, model_root=model_root), cfg.task, model_id=cfg.model, head="fresh",
                           seed=cfg.seed, data=cfg.data, data_root=data_root, model_root=model_root)
    model = prepared.model.to(dev)
    mask = None
    if cfg.ticket:
        mask = load_ticket(cfg.ticket).mask
        mask.check(model)
        mask.to(dev).apply_(model)
    scores = probe_task(model, prepared.task, cfg.split, probe=cfg.probe, device=dev, batch_size=cfg.batch_size,
                        limit=cfg.data.limit, head=prepared.spec.head, seed=cfg.seed)
    key = f"{cfg.probe}_accuracy"
    if cfg.probe == "knn":
        settings = {"bank": scores["bank"], "k": scores["k"], "temperature": KNN_TEMPERATURE, "vote": "exp(cos/T)"}
    else:
        settings = {"train_examples": scores["bank"], "classifier": "LogisticRegression(C=1) on standardised features"}
    settings["features"] = _feature_source(prepared.model)
    metrics = {key: scores[key], "examples": scores["examples"], "split": cfg.split, "task": prepared.task.name,
               "model": prepared.model_id, "primary_metric": key, "probe": cfg.probe, "probe_settings": settings}
    if cfg.weights:
        metrics["weights"] = str(cfg.weights)
    if mask is not None:
        metrics["sparsity"] = mask.sparsity
    return metrics


def _feature_source(model: torch.nn.Module) -> str:
    for attr in ("embed", "features"):
        if callable(getattr(model, attr, None)) and not isinstance(getattr(model, attr), torch.nn.Module):
            return f"{attr}()"
    return "head input"


def format_metrics(m: dict) -> str:
    """One line: "resnet20-cifar10 on cifar10/test (10000 examples): accuracy 91.73%" (with ", weights F" after
    the model when ``--weights F`` was scored)."""
    keys = [k for k in m if isinstance(m[k], float) and k not in ("sparsity",)]
    parts = []
    for k in [m["primary_metric"]] + [k for k in keys if k != m["primary_metric"]]:
        v = m[k]
        pct = k in ("accuracy", "f1", "masked_accuracy") or k.endswith("accuracy")
        parts.append(f"{k} {v:.2%}" if pct else f"{k} {v:.4f}")
    model = f"{m['model']} (weights {m['weights']})" if m.get("weights") else m["model"]
    where = f"{model} on {m['task']}/{m['split']} ({m['examples']} examples"
    where += f", ticket {m['sparsity']:.2%} sparse)" if "sparsity" in m else ")"
    return f"{where}: " + ", ".join(parts) + (f"; {format_robust(m['robust'])}" if m.get("robust") else "")


def format_robust(r: dict) -> str:
    """"robust accuracy 0.20% under pgd-20 (eps 8/255, alpha 2/255; 300 examples, clean 92.00%)"."""
    name = f"{r['attack']}-{r['steps']}" if r["attack"] == "pgd" else r["attack"]
    unit = "/255" if r.get("units", "").startswith("1/255") else ""
    return (f"robust {r['metric']} {r['robust_accuracy']:.2%} under {name} (eps {r['eps']:g}{unit}, "
            f"alpha {r['alpha']:g}{unit}; {r['examples']} examples, clean {r['clean_accuracy']:.2%})")
