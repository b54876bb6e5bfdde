"""``tickets find``: draw tickets from pre-trained weights, level by level, with any registered method and pattern.

The method (``tickets.methods``: imp, omp, random, reverse, reinit, …) draws each level's mask; the pattern
(``tickets.patterns``: unstructured, …) decides the shape of what is pruned. IMP's level 0 fine-tunes the dense
model; level i prunes the weights level i-1 ended with to the level's sparsity, rewinds the survivors to the
rewind point (θ0, step K, or a random re-init) and fine-tunes again. One-shot methods draw every level without
training and fine-tune it once to score it.

The next level's ticket is written *before* a level is marked done, so a run killed anywhere resumes exactly. A
level whose artefacts do not verify (no ticket, unreadable metrics) is redone from its start with a warning,
never trusted and never fatal; finished levels are never deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from tickets import __version__
from tickets.config import (FindConfig, RewindPoint, ScheduleConfig, resolve_attack, resolve_schedule, resolve_train,
                            validate_find)
from tickets.errors import TicketsError, counted
from tickets.fileio import atomic_write, read_json, remove_stale_temporaries, require_weights_file, write_json
from tickets.hparams import hash_view
from tickets.log import get_logger
from tickets.masks import Mask, PrunableSet
from tickets.methods import DrawContext, Method, MissingTicket, get_method
from tickets.models.base import ModelSpec
from tickets.patterns import get_pattern
from tickets.runs import RunBusy, RunDir, RunLayout, run_lock
from tickets.runtime import barrier, resolve_device
from tickets.tasks.base import Task
from tickets.ticket import Ticket, load_ticket, save_ticket
from tickets.training.callbacks import Callback, GradientUse, RewindCapture
from tickets.training.loop import fine_tune_steps
from tickets.verbs.level import run_level
from tickets.verbs.prepare import Prepared, prepare, random_init_state, task_options

logger = get_logger(__name__)


@dataclass
class FindResult:
    """A finished find run: its directory and one record per level (sparsity, metrics, ticket path)."""

    path: Path
    levels: list[dict]

    def ticket(self, level: int) -> Ticket:
        return load_ticket(RunLayout(self.path).ticket(level))


def sparsity_levels(cfg: FindConfig) -> list[float]:
    """The target sparsity of every level: the schedule's (or the pattern's, when it fixes them: N:M), after
    IMP's dense level 0. TicketsError when a pattern that fixes the sparsities meets schedule options."""
    method = get_method(cfg.method)
    fixed = get_pattern(cfg.pattern).levels()
    if fixed is None:
        return method.levels(resolve_schedule(cfg.schedule).sparsities_list())
    if cfg.schedule != ScheduleConfig():
        raise TicketsError(f"pattern {cfg.pattern} fixes the sparsity of each level "
                           f"({', '.join(f'{s:g}' for s in fixed)}): drop --sparsities/--levels/--rate/--schedule")
    return method.levels(fixed)


def resolved_config(cfg: FindConfig, *, model_id: str, task: str, prunable: PrunableSet, family: str,
                    recipe: dict | None = None, variant: dict | None = None) -> dict:
    """The config as hashed and written to config.yaml: defaults filled in, model identified by ``model_id``.

    Needs no loaded model or data (``tickets run --dry-run`` calls it with registry facts)."""
    d = hash_view(cfg)
    d.update(model=model_id, task=task, prunable=prunable.to_dict(), rewind=str(RewindPoint.parse(cfg.rewind)),
             schedule=hash_view(resolve_schedule(cfg.schedule)),
             train=hash_view(resolve_train(cfg.train, family, recipe)), levels=sparsity_levels(cfg))
    if cfg.weights is not None:
        d["weights"] = weights_identity(cfg.weights)
    if variant:  # a text model reading the sequence by mean pooling, weights in bf16, …: another computation
        d["model_variant"] = dict(variant)
    if cfg.robust_eval is not None:
        d["robust_eval"] = hash_view(resolve_attack(cfg.robust_eval, "robust_eval"))
    if d["rewind"] == "reinit" and get_method(cfg.method).dense_start:
        # IMP's dense level 0 of a reinit-rewind run trains from θ0 (it trained from a random init before
        # 2026-11-30): a new key, so those older runs get their own directory instead of being resumed or reused
        d["dense_level_from"] = "theta0"
    return d


def weights_identity(path: str | Path) -> dict:
    """How a ``--weights`` checkpoint enters a run hash: its content (sha256), never its path."""
    from tickets.statedict import file_digest

    return {"sha256": file_digest(require_weights_file(path))}


def planned_config(cfg: FindConfig, *, preset: str | None = None) -> dict:
    """``resolved_config`` from registry facts (the model's preset, family and recipe, the task's canonical
    name) without loading the model or any data: what ``find_tickets(cfg)`` will hash, for registered names.
    ``preset`` overrides the registry's default prunable preset (for models registered without one)."""
    from tickets.models import MODELS, model_family, model_recipe, planned_model_variant
    from tickets.tasks import canonical_task

    preset = preset or MODELS.meta(cfg.model).get("preset") or "all"
    return resolved_config(cfg, model_id=cfg.model, task=canonical_task(cfg.task),
                           prunable=PrunableSet.parse(cfg.prunable or preset), family=model_family(cfg.model),
                           recipe=model_recipe(cfg.model), variant=planned_model_variant(cfg.model))


def run_path(cfg: FindConfig, out: str | Path = "runs") -> Path:
    """The run directory ``find_tickets(cfg, out=out)`` writes to, computed without running or loading anything."""
    from tickets.runs import config_hash

    return Path(out) / f"find-{config_hash(planned_config(cfg))}"


def find_tickets(
    cfg: FindConfig,
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
) -> FindResult:
    """Draw tickets per ``cfg`` into ``out/find-<hash>/``, skipping levels that are already done.

    ``model`` / ``task`` let Python users pass any ModelSpec (e.g. ``tickets.models.from_module(net, head="fc")``)
    or Task instead of registry names. ``callbacks`` join every level's fine-tune; ``log_to`` names logging sinks (tensorboard, mlflow).
    TicketsError for bad settings, missing data or weights, or a run another process is writing.
    """
    validate_find(cfg)
    method = get_method(cfg.method)
    rewind = RewindPoint.parse(cfg.rewind)
    if rewind.kind == "step" and not method.dense_start:
        raise TicketsError(f"rewind {cfg.rewind} needs an iterative method that trains a dense level 0 (imp), not "
                           f"{cfg.method}: drop --rewind or use --method imp")
    device = resolve_device(device)
    prepared = prepare(model or cfg.model, task or cfg.task, head=cfg.head, seed=cfg.seed, prunable=cfg.prunable,
                       data=cfg.data, data_root=data_root, model_root=model_root, weights=cfg.weights,
                       task_options=task_options(cfg))
    pattern = get_pattern(cfg.pattern)
    pattern.setup(prepared.model, prepared.names, prepared.spec)
    train = resolve_train(cfg.train, prepared.family, prepared.recipe)
    steps = fine_tune_steps(len(prepared.task.train), train)
    if rewind.kind == "step" and rewind.step >= steps:  # before the run directory exists: nothing left behind
        raise TicketsError(f"rewind point step:{rewind.step} is beyond the {counted(steps, 'optimizer step')} of "
                           "a fine-tune: choose a smaller K or train longer")
    config = resolved_config(cfg, model_id=prepared.model_id, task=prepared.task.name, prunable=prepared.prunable,
                             family=prepared.family, recipe=prepared.recipe, variant=prepared.variant)
    run = RunDir(out, "find", config)
    barrier()  # data parallel: rank 0 has written config.yaml
    run.check_inputs(prepared.inputs())
    for note in prepared.notes(cfg.train):
        logger.info(note)
    if run.layout.summary.exists() and all(run.is_done(i) and _verified(run.layout, i)
                                           for i in range(len(config["levels"]))):
        return FindResult(run.path, [_record(run.layout, i) for i in range(len(config["levels"]))])  # no writes
    with run_lock(run.layout.lock) as held:
        if not held:
            raise RunBusy(f"run {run.path} is being written by another process right now: wait for it to finish "
                               "(rerunning then reuses its levels) or choose another --out")
        remove_stale_temporaries(run.path)
        prerequisite = None
        before = method.prerequisite(cfg)
        if before is not None:  # random re-init reuses (or first draws) the IMP tickets of the same settings
            first = find_tickets(before, out=out, device=device, data_root=data_root, model_root=model_root,
                                 progress=progress, model=model, task=task, callbacks=callbacks, log_to=log_to)
            prerequisite = RunLayout(first.path)
            prepared.load_weights(prepared.theta0)
        ctx = DrawContext(cfg, prepared, pattern, run, rewind, prerequisite)
        records = _draw_levels(ctx, method, config["levels"], train, device, progress, callbacks, log_to)
    write_json(run.layout.summary, {"config": config, "levels": records})
    run.log("run_done", levels=len(records))
    return FindResult(run.path, records)


def _draw_levels(ctx: DrawContext, method: Method, levels: list[float], train, device: torch.device,
                 progress: bool, callbacks: Sequence[Callback], log_to: Sequence[str]) -> list[dict]:
    cfg, prepared, run, layout = ctx.cfg, ctx.prepared, ctx.run, ctx.run.layout
    run.log("run_start", kind="find", method=cfg.method, pattern=cfg.pattern, levels=levels, device=str(device),
            notes=prepared.notes(cfg.train))
    logger.info("find %s %s on %s: %d levels -> %s", cfg.method, prepared.model_id, prepared.task.name,
                len(levels), run.path)
    start, weights_label = _start_weights(ctx, method)
    from tickets.diagnostics import shortfall_warning, sparsity_warnings, unit_warnings

    # θ0's scales, once per run, when one ranking compares tensors (global scope; not layer-wise, not N:M)
    scales = ctx.theta0_scores() if ctx.pattern.ranks_across_tensors(cfg.scope) else None
    for warning in sparsity_warnings(ctx.ones(), scales):
        logger.warning(warning)
        run.log("warning", message=warning)
    level = 0
    while level < len(levels):
        sparsity = levels[level]
        if run.is_done(level):
            if _verified(layout, level):
                level += 1
                continue
            logger.warning("level %d of %s is marked done but its ticket or metrics do not verify: redoing it",
                           level, run.path)
            run.log("level_redo", level=level, reason="artefacts do not verify")
            run.unmark_done(level)
        mask = _level_mask(ctx, method, level, sparsity, weights_label)
        if mask is None:  # IMP: the previous level must be trained again to draw this one
            logger.warning("level %d of %s has no ticket: training level %d again to draw it", level, run.path,
                           level - 1)
            run.log("level_redo", level=level - 1, reason=f"level {level} has no ticket")
            run.unmark_done(level - 1)
            level -= 1
            continue
        level_start, start_step = _level_start(ctx, level, start, dense_start=method.dense_start)
        if level_start is None:  # the rewind point was never saved: redo the dense level that captures it
            logger.warning("rewind point of %s is missing: training level 0 again to capture it", run.path)
            run.unmark_done(0)
            level = 0
            continue
        warnings = [] if sparsity <= 0 else [
            *sparsity_warnings(mask), *unit_warnings(ctx.pattern.group_report(mask)),
            *filter(None, [shortfall_warning(sparsity, mask.sparsity, ctx.pattern.spec())])]
        for warning in warnings:
            logger.warning("level %d: %s", level, warning)
            run.log("warning", level=level, message=warning)
        own = list(callbacks)
        if level == 0 and ctx.rewind.kind == "step" and method.dense_start:
            own.append(RewindCapture(ctx.rewind.step, lambda state: _save_rewind(run, state)))
        use = GradientUse(prepared.names)
        own.append(use)
        run_level(run, level, prepared, mask=mask, pattern=ctx.pattern, start=level_start, train=train,
                  seed=cfg.seed, device=device, limit=cfg.data.limit, progress=progress, callbacks=own,
                  start_step=start_step, log_to=log_to,
                  extra={"sparsity": mask.sparsity, "target_sparsity": sparsity, "method": cfg.method,
                         "pattern": ctx.pattern.at(sparsity).spec(),
                         **({"warnings": warnings} if warnings else {})},
                  evaluate_extra=robust_extra(cfg.robust_eval, device, cfg.data.limit, train.eval_batch_size,
                                              cfg.seed))
        if level + 1 < len(levels):
            ctx.unused = frozenset(use.unused)
            if use.unused and method.dense_start:
                message = (f"{len(use.unused)} prunable tensor(s) got no gradient on {prepared.task.name} (the task "
                           f"does not use them, e.g. {use.unused[0]}): IMP keeps their masks as they are instead of "
                           "pruning them by θ0 magnitude")
                logger.warning(message)
                run.log("unused_tensors", level=level, tensors=use.unused)
            nxt = method.next_mask(ctx, level, mask, prepared.model, levels[level + 1])
            if nxt is not None:
                save_ticket(layout.ticket(level + 1), Ticket(nxt, _meta(ctx, level + 1, levels[level + 1],
                                                                        weights_label, nxt), _ticket_weights(ctx)))
        run.mark_done(level)
        run.drop_checkpoint(level)
        barrier()  # data parallel: every rank reads the next level's ticket only once rank 0 has written it
        level += 1
    return [_record(layout, i) for i in range(len(levels))]


def _verified(layout: RunLayout, level: int) -> bool:
    """A done level's ticket loads (checksum verified) and its metrics.json parses with the keys reports read."""
    try:
        load_ticket(layout.ticket(level))
        m = read_json(layout.metrics(level))
        return isinstance(m, dict) and all(k in m for k in ("test", "val", "primary_metric", "sparsity"))
    except (TicketsError, OSError, ValueError):
        return False


def _level_mask(ctx: DrawContext, method: Method, level: int, sparsity: float, weights_label: str) -> Mask | None:
    """The level's mask: its saved ticket when it verifies, else drawn now (and saved); None when an iterative
    method needs the previous level retrained."""
    path = ctx.run.layout.ticket(level)
    if path.exists():
        try:
            mask = load_ticket(path).mask
            if sparsity > 0:
                ctx.pattern.at(sparsity).verify(mask)
            return mask
        except TicketsError as exc:
            logger.warning("ticket of level %d does not verify (%s): drawing it again", level, exc)
    try:
        mask = method.draw(ctx, level, sparsity)
    except MissingTicket:
        if level == 0:
            raise
        return None
    save_ticket(path, Ticket(mask, _meta(ctx, level, sparsity, weights_label, mask), _ticket_weights(ctx)))
    return mask


def _record(layout: RunLayout, level: int) -> dict:
    m = read_json(layout.metrics(level))
    return {
        "level": m["level"],
        "sparsity": m["sparsity"],
        "target_sparsity": m["target_sparsity"],
        "val": m["val"],
        "test": m["test"],
        "primary_metric": m["primary_metric"],
        "ticket": str(layout.ticket(level)),
        **({"robust": m["robust"]} if "robust" in m else {}),
    }


def robust_extra(robust_eval, device: torch.device, limit: int | None, batch_size: int, seed: int):
    """``run_level``'s ``evaluate_extra`` hook: ``{"robust": {...}}`` (SA and RA on the test split, under the
    level's mask), or None."""
    if robust_eval is None:
        return None
    cfg = resolve_attack(robust_eval, "robust_eval")

    def extra(prepared: Prepared, mask: Mask | None) -> dict:
        from tickets.training.attacks import robust_evaluate

        n = cfg.limit if cfg.limit is not None else limit
        logger.info("  robust eval: %s eps %g, %d steps, %s test examples", cfg.attack, cfg.eps, cfg.steps,
                    n or "all")
        return {"robust": robust_evaluate(prepared.model, prepared.task, "test", attack=cfg.attack, eps=cfg.eps,
                                          alpha=cfg.alpha, steps=cfg.steps, device=device, batch_size=batch_size,
                                          limit=n, mask=mask, seed=seed)}

    return extra


def _start_weights(ctx: DrawContext, method: Method) -> tuple[dict, str]:
    """Weights every level starts from (before masking) and how tickets describe them."""
    if method.start(ctx) == "reinit" or ctx.rewind.kind == "reinit":
        return random_init_state(ctx.prepared, ctx.cfg.seed), f"reinit:seed-{ctx.cfg.seed}"
    if ctx.rewind.kind == "step":
        return ctx.prepared.theta0, f"rewind:{ctx.rewind}"  # replaced by the captured state from level 1 on
    return ctx.prepared.theta0, "theta0"


def _level_start(ctx: DrawContext, level: int, start: dict, *, dense_start: bool = False
                 ) -> tuple[dict | None, int]:
    """(weights, first step): level 0 starts from ``start`` at step 0; with rewind step:K, later levels start
    from the weights saved after step K, at step K. (None, K) when that rewind point was never saved.

    With ``--rewind reinit`` the survivors go back to a random re-initialisation, but an iterative method's dense
    level 0 (``dense_start``: IMP) is the pre-trained model's fine-tune (θ0), as for every other rewind point: its
    trained weights rank level 1's mask (it trained from random weights, so the masks were not the pre-trained
    model's at all). One-shot methods have no dense level: their level 0 is a ticket and starts from ``start``."""
    if level == 0 and dense_start and ctx.rewind.kind == "reinit":
        return ctx.prepared.theta0, 0
    if level == 0 or ctx.rewind.kind != "step":
        return start, 0
    path = ctx.run.layout.rewind
    if not path.exists():
        return None, ctx.rewind.step
    from safetensors.torch import load_file

    return load_file(path), ctx.rewind.step


def _save_rewind(run: RunDir, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    atomic_write(run.layout.rewind, lambda tmp: save_file(state, str(tmp)))
    run.log("rewind_point", step=RewindPoint.parse(run.config["rewind"]).step)


def _ticket_weights(ctx: DrawContext) -> dict | None:
    """Tickets carry their weights only when those are not θ0 (a rewind step): the prunable tensors suffice."""
    if ctx.rewind.kind == "step" and ctx.run.layout.rewind.exists():
        from safetensors.torch import load_file

        state = load_file(ctx.run.layout.rewind)
        return {n: state[n] for n in ctx.prepared.names}
    return None


def _meta(ctx: DrawContext, level: int, target: float, weights: str, mask: Mask) -> dict:
    cfg, prepared = ctx.cfg, ctx.prepared
    meta = {
        "model": prepared.model_id,
        "prunable": prepared.prunable.to_dict(),
        "source_task": prepared.task.name,
        "method": cfg.method,
        "scope": cfg.scope,
        "level": level,
        "target_sparsity": target,
        "sparsity": mask.sparsity,
        "seed": cfg.seed,
        "weights": weights,
        "head_policy": cfg.head,
        "adversarial": hash_view(resolve_train(cfg.train, prepared.family, prepared.recipe).adversarial),
        "run": ctx.run.path.name,
        "tickets_version": __version__,
    }
    if cfg.weights is not None:
        meta["theta0_weights"] = weights_identity(cfg.weights)
    if ctx.pattern.name != "unstructured":
        meta["pattern"] = ctx.pattern.at(target).describe() if target > 0 else ctx.pattern.describe()
    if ctx.rewind.kind == "step":
        meta["rewind"] = {"step": ctx.rewind.step, "optimizer_state": "reset at step K (fresh optimizer)",
                          "lr_schedule": "continues from step K", "data_order": "continues from step K"}
    return meta

