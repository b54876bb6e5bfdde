"""Ticket transfer: a mask drawn on a source task, applied to θ0, fine-tuned on a target task.

Without a ticket this is the dense baseline every "matching" figure is measured against. The run directory is
named by the resolved config, which identifies the ticket by its mask checksum, not its path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from tickets.config import TransferConfig, resolve_attack, resolve_train, validate_transfer
from tickets.errors import TicketsError
from tickets.fileio import atomic_write, read_json, remove_stale_temporaries
from tickets.hparams import hash_view
from tickets.log import get_logger
from tickets.masks import Mask
from tickets.models.base import ModelSpec
from tickets.patterns import pattern_from_meta
from tickets.runs import RunBusy, RunDir, run_lock
from tickets.runtime import barrier, resolve_device
from tickets.tasks.base import Task
from tickets.ticket import Ticket, load_ticket
from tickets.training.callbacks import Callback
from tickets.verbs.level import run_level
from tickets.verbs.prepare import Prepared, prepare, random_init_state, task_options

logger = get_logger(__name__)


@dataclass
class TransferResult:
    path: Path
    metrics: dict

    @property
    def score(self) -> float:
        return self.metrics["test"][self.metrics["primary_metric"]]


def ticket_mask(ticket: Ticket, prepared: Prepared, reverse: bool = False) -> Mask:
    """The ticket's mask fitted to the model (``Ticket.fit``): names matched to the model's parameters (a wrapper
    prefix such as ``module.`` or ``model.`` resolved, with a notice), entries for the task head ignored with a
    notice (heads are rebuilt per task), shapes checked. Tensors the ticket does not cover stay dense."""
    mask = ticket.fit(prepared.model, head=prepared.spec.head)
    return mask.invert() if reverse else mask


def theta0_mismatch(ticket: Ticket, weights: str | Path | None) -> str | None:
    """The warning for applying ``ticket`` to a θ0 other than the one it was drawn on, or None when they agree.

    ``weights``: the ``--weights`` checkpoint θ0 comes from here (None: the model's shipped weights). The ticket's
    θ0 is what it records (``tickets.ticket.theta0_checkpoint``: the checkpoint's sha256 from ``tickets find
    --weights`` or ``ticket-from-weights --weights``, none for the shipped weights); checkpoints are compared by
    content, never by path. None too for a mask that records no θ0 (another tool's, ``records_theta0``)."""
    from tickets.ticket import records_theta0, theta0_checkpoint
    from tickets.verbs.find import weights_identity

    if not records_theta0(ticket):
        return None
    drawn = theta0_checkpoint(ticket)
    here = weights_identity(weights)["sha256"] if weights is not None else None
    if drawn == here:
        return None
    recorded = ticket.meta.get("source_weights")
    path = recorded.get("path") if isinstance(recorded, dict) else None
    name = ticket.source or "ticket"
    if drawn is None:
        return (f"ticket {name} was drawn on the shipped weights, but θ0 here is checkpoint {here[:12]} (--weights): "
                "drop --weights to apply the mask to the weights it was drawn from")
    fix = f"pass --weights {path}" if path else "pass the same --weights"
    return (f"ticket {name} was drawn on checkpoint {drawn[:12]}, but θ0 here is "
            f"{'checkpoint ' + here[:12] if here else 'the shipped weights'}: {fix} (sha256 {drawn[:12]}…) to apply "
            "the mask to the weights it was drawn from")


def effective_init(cfg: TransferConfig, ticket: Ticket | None) -> str:
    """``cfg.init`` with the default ``"ticket"`` resolved for tickets that say how they are meant to start: a
    ticket drawn by the random re-initialisation baseline (``weights`` "reinit:…", carrying no weights) starts
    from a random re-init — it started from θ0, so its "reinit baseline" scores were the IMP ticket's (a
    newcomer's report). An explicit ``theta0`` or ``reinit`` is kept."""
    if cfg.init == "ticket" and ticket is not None and not ticket.weights and \
            str(ticket.meta.get("weights") or "").startswith("reinit"):
        return "reinit"
    return cfg.init


def start_state(cfg: TransferConfig, prepared: Prepared, ticket: Ticket | None) -> tuple[dict, str]:
    """The weights fine-tuning starts from: θ0, the ticket's own weights, or a random re-init."""
    if cfg.init == "reinit":
        return random_init_state(prepared, cfg.seed), f"reinit:seed-{cfg.seed}"
    state = dict(prepared.theta0)
    if cfg.init == "ticket" and ticket is not None and ticket.weights:
        for name, value in ticket.weights.items():
            if name not in state or state[name].shape != value.shape:
                raise TicketsError(f"ticket weight {name!r} does not fit model {prepared.model_id}: use --init theta0")
            state[name] = value.to(state[name].dtype)
        return state, ticket.meta.get("weights", "ticket")
    return state, "theta0"


def resolved_config(cfg: TransferConfig, model_id: str, task_name: str, family: str,
                    ticket: Ticket | None, recipe: dict | None = None, variant: dict | None = None) -> dict:
    """The config as hashed and written to config.yaml: defaults filled, the ticket named by its mask checksum.

    Needs no loaded model or data, so `tickets run --dry-run` computes run directories with it too."""
    config = hash_view(dataclasses.replace(cfg, init=effective_init(cfg, ticket)))
    config.update(model=model_id, task=task_name, train=hash_view(resolve_train(cfg.train, family, recipe)))
    if cfg.robust_eval is not None:
        config["robust_eval"] = hash_view(resolve_attack(cfg.robust_eval, "robust_eval"))
    config["ticket"] = None if ticket is None else {"checksum": ticket.meta.get("checksum"),
                                                    "sparsity": round(ticket.mask.sparsity, 6)}
    if cfg.weights is not None:
        from tickets.verbs.find import weights_identity

        config["weights"] = weights_identity(cfg.weights)
    if variant:
        config["model_variant"] = dict(variant)
    return config


def transfer(
    cfg: TransferConfig,
    *,
    out: str | Path = "runs",
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    model_root: str | Path | None = None,
    progress: bool = True,
    model: ModelSpec | None = None,
    task: Task | None = None,
    callbacks: Sequence[Callback] = (),
    log_to: Sequence[str] = (),
) -> TransferResult:
    """Fine-tune θ0 under ``cfg.ticket``'s mask (dense when None) on ``cfg.task``; resumable by config hash.

    Without ``cfg.model`` the model the ticket records is used. TicketsError for bad settings, a ticket that does
    not fit the model, missing data, or a run another process is writing."""
    validate_transfer(cfg)
    device = resolve_device(device)
    ticket = load_ticket(cfg.ticket) if cfg.ticket else None
    init = effective_init(cfg, ticket)
    if init != cfg.init:
        logger.info("ticket %s is a random re-initialisation baseline (weights %s): fine-tuned from a random "
                    "re-init, as --init reinit (pass --init theta0 to start from the pre-trained weights)",
                    cfg.ticket, ticket.meta.get("weights"))
        cfg = dataclasses.replace(cfg, init=init)
    model_name = model or cfg.model
    if ticket is not None and model is None and cfg.model in ("", "auto"):
        model_name = ticket.meta.get("model") or ""
        if not model_name:
            raise TicketsError(f"ticket {cfg.ticket} records no model (a {ticket.meta.get('format', 'legacy')} mask "
                               "file, e.g. from torch prune or open_lth): pass --model NAME")
    prepared = prepare(model_name, task or cfg.task, head=cfg.head, seed=cfg.seed, data=cfg.data,
                       data_root=data_root, model_root=model_root, weights=cfg.weights,
                       task_options=task_options(cfg))
    drawn_for = ticket.meta.get("model") if ticket is not None else None
    if drawn_for and drawn_for != prepared.model_id:
        if not cfg.force:
            raise TicketsError(f"ticket {cfg.ticket} was drawn for model {drawn_for!r}, not {prepared.model_id!r}: "
                               f"transfer it with --model {drawn_for} (or pass --force to use it on "
                               f"{prepared.model_id} where its tensors fit)")
        logger.warning("ticket drawn for %s used on %s (--force): sparsity is reported over the tensors it masks",
                       drawn_for, prepared.model_id)
    if ticket is not None and cfg.init != "reinit":  # θ0 is where fine-tuning starts (reinit: it is not used)
        mismatch = theta0_mismatch(ticket, cfg.weights)
        if mismatch:
            logger.warning("%s", mismatch)
    train = resolve_train(cfg.train, prepared.family, prepared.recipe)
    mask = ticket_mask(ticket, prepared, cfg.reverse) if ticket is not None else None
    pattern = None
    if ticket is not None:
        pattern = pattern_from_meta(ticket.meta.get("pattern"))
        pattern.setup(prepared.model, mask.names, prepared.spec)
        if not cfg.reverse:  # the complement of an N:M mask is (M−N):M: only the drawn mask is checked
            pattern.verify(mask)
    start, weights_label = start_state(cfg, prepared, ticket)

    config = resolved_config(cfg, prepared.model_id, prepared.task.name, prepared.family, ticket, prepared.recipe,
                             prepared.variant)
    run = RunDir(out, "transfer", config)
    barrier()  # data parallel: rank 0 has written config.yaml
    run.check_inputs(prepared.inputs())
    notes = prepared.notes(cfg.train)
    for note in notes:
        logger.info(note)
    if run.is_done(0):
        try:
            return TransferResult(run.path, read_json(run.layout.metrics(0)))
        except (OSError, ValueError):
            logger.warning("%s is marked done but its metrics.json is unreadable: running it again", run.path)
    with run_lock(run.layout.lock) as held:
        if not held:
            raise RunBusy(f"run {run.path} is being written by another process right now: wait for it to finish "
                               "or choose another --out")
        remove_stale_temporaries(run.path)
        run.unmark_done(0)
        run.log("run_start", kind="transfer", ticket=cfg.ticket, device=str(device), notes=notes)
        what = f"ticket {cfg.ticket} ({mask.sparsity:.1%} sparse)" if mask is not None else "dense"
        logger.info("transfer %s -> %s on %s: %s", what, prepared.task.name, prepared.model_id, run.path)
        extra = {
            "sparsity": mask.sparsity if mask is not None else 0.0,
            "weights": weights_label,
            "ticket": None if ticket is None else {"path": str(cfg.ticket), **_ticket_summary(ticket)},
        }
        from tickets.verbs.find import robust_extra

        metrics = run_level(run, 0, prepared, mask=mask, pattern=pattern, start=start, train=train, seed=cfg.seed,
                            device=device, limit=cfg.data.limit, progress=progress, extra=extra, callbacks=callbacks,
                            log_to=log_to, evaluate_extra=robust_extra(cfg.robust_eval, device, cfg.data.limit,
                                                                       train.eval_batch_size, cfg.seed))
        if cfg.save_weights:
            from safetensors.torch import save_file

            # clone: tied tensors (an MLM decoder sharing the word embeddings) must not share storage in the file
            state = {k: v.detach().cpu().clone().contiguous() for k, v in prepared.model.state_dict().items()}
            atomic_write(run.layout.weights(), lambda tmp: save_file(state, str(tmp), metadata={
                "model": prepared.model_id, "task": prepared.task.name}))
        run.mark_done(0)
        run.drop_checkpoint(0)
        run.log("run_done")
        barrier()
    return TransferResult(run.path, metrics)


def _ticket_summary(ticket: Ticket) -> dict:
    keep = ("model", "source_task", "method", "level", "seed", "weights", "checksum", "format", "adversarial")
    return {k: ticket.meta[k] for k in keep if k in ticket.meta}
