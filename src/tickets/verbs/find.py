"""Drawing tickets from pre-trained weights: IMP, OMP, random pruning, reverse magnitude, random re-init.

IMP: level 0 fine-tunes the dense model; level i prunes the weights level i-1 ended with to the level's sparsity,
rewinds the survivors to the rewind point (θ0 by default) and fine-tunes again. The other methods draw each
level's mask without training (OMP: |θ0|; reverse: prune the largest |θ0| first; random: random positions;
reinit: IMP's masks with randomly re-initialised weights) and fine-tune it once to score it.

The next level's ticket is written *before* a level is marked done, so a run killed anywhere resumes exactly.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tickets import __version__
from tickets.config import FindConfig, resolve_attack, resolve_train, to_dict, validate_find
from tickets.errors import TicketsError
from tickets.verbs.level import run_level
from tickets.masks import Mask
from tickets.models.base import ModelSpec
from tickets.verbs.prepare import Prepared, prepare, random_init_state
from tickets.pruning import Schedule, magnitude_prune, random_prune, reverse_prune
from tickets.runs import RunDir, read_json, write_json
from tickets.tasks.base import Task
from tickets.ticket import Ticket, load_ticket, save_ticket
from tickets.runtime import resolve_device

TICKET_FILE = "ticket.safetensors"


@dataclass
class FindResult:
    """A finished find run: its directory and one record per level (sparsity, metrics, ticket path)."""

    path: Path
    levels: list[dict]

    def ticket(self, level: int) -> Ticket:
        return load_ticket(self.path / f"level-{level:02d}" / TICKET_FILE)


def sparsity_levels(cfg: FindConfig) -> list[float]:
    """The levels to draw: IMP starts with the dense level 0, the one-shot methods do not need it."""
    s = cfg.schedule
    levels = Schedule(kind=s.kind, rate=s.rate, levels=s.levels, sparsities=tuple(s.sparsities or ())).sparsities_list()
    return [0.0] + levels if cfg.method == "imp" else levels


def resolved_config(cfg: FindConfig, prepared: Prepared) -> dict:
    """The config as hashed and written to config.yaml: defaults filled, model identified by content."""
    d = to_dict(cfg)
    d["model"] = prepared.model_id
    d["task"] = prepared.task.name
    d["prunable"] = prepared.prunable.to_dict()
    d["train"] = to_dict(resolve_train(cfg.train, prepared.family))
    d["levels"] = sparsity_levels(cfg)
    d.pop("robust_eval", None)  # absent when not asked for, so older runs keep their hash
    if cfg.robust_eval is not None:
        d["robust_eval"] = to_dict(resolve_attack(cfg.robust_eval, "robust_eval"))
    return d


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
) -> FindResult:
    """Draw tickets per ``cfg`` into ``out/find-<hash>/``, skipping levels that are already done.

    ``model`` / ``task`` let Python users pass any ModelSpec (e.g. ``tickets.models.from_module(net, head="fc")``)
    or Task instead of registry names.
    """
    validate_find(cfg)
    device = resolve_device(device)
    prepared = prepare(
        model or cfg.model,
        task or cfg.task,
        head=cfg.head,
        seed=cfg.seed,
        prunable=cfg.prunable,
        data=cfg.data,
        data_root=data_root,
        model_root=model_root,
    )
    train = resolve_train(cfg.train, prepared.family)
    config = resolved_config(cfg, prepared)
    run = RunDir(out, "find", config)
    levels = config["levels"]
    run.log("run_start", kind="find", method=cfg.method, levels=levels, device=str(device))
    if progress:
        print(f"find {cfg.method} {prepared.model_id} on {prepared.task.name}: {len(levels)} levels -> {run.path}",
              file=sys.stderr)

    imp_masks = None
    if cfg.method == "reinit":  # random re-init reuses (or first draws) the IMP tickets of the same config
        imp = find_tickets(dataclasses.replace(cfg, method="imp"), out=out, device=device, data_root=data_root,
                           model_root=model_root, progress=progress, model=model, task=task)
        imp_masks = {i: imp.ticket(i).mask for i in range(1, len(imp.levels))}
        prepared.load_weights(prepared.theta0)

    start, weights_label = _start_weights(cfg, prepared, run)
    records = []
    for level, sparsity in enumerate(levels):
        level_dir = run.path / f"level-{level:02d}"
        if run.is_done(level):
            records.append(_record(level_dir))
            continue
        mask = _mask_for_level(cfg, prepared, run, level, sparsity, imp_masks)
        meta = _meta(cfg, prepared, run, level, sparsity, weights_label, mask)
        if not (level_dir / TICKET_FILE).exists():
            save_ticket(level_dir / TICKET_FILE, Ticket(mask, meta, _ticket_weights(cfg, prepared, run)))
        on_step = _rewind_capture(cfg, prepared, run) if (cfg.method == "imp" and level == 0) else None
        run_level(
            run, level, prepared, mask=mask, start=_level_start(cfg, run, level, start),
            train=train, seed=cfg.seed, device=device, limit=cfg.data.limit, progress=progress,
            extra={"sparsity": mask.sparsity, "target_sparsity": sparsity, "method": cfg.method}, on_step=on_step,
            evaluate_extra=robust_extra(cfg.robust_eval, device, cfg.data.limit, train.eval_batch_size, cfg.seed,
                                        mask, progress),
        )
        if cfg.method == "imp" and level + 1 < len(levels):
            next_mask = _imp_prune(cfg, prepared, mask, levels[level + 1])
            next_meta = _meta(cfg, prepared, run, level + 1, levels[level + 1], weights_label, next_mask)
            save_ticket(run.path / f"level-{level + 1:02d}" / TICKET_FILE,
                        Ticket(next_mask, next_meta, _ticket_weights(cfg, prepared, run)))
        run.mark_done(level)
        run.drop_checkpoint(level)
        records.append(_record(level_dir))
    write_json(run.path / "summary.json", {"config": config, "levels": records})
    run.log("run_done", levels=len(records))
    return FindResult(run.path, records)


def _record(level_dir: Path) -> dict:
    m = read_json(level_dir / "metrics.json")
    return {
        "level": m["level"],
        "sparsity": m["sparsity"],
        "target_sparsity": m["target_sparsity"],
        "val": m["val"],
        "test": m["test"],
        "primary_metric": m["primary_metric"],
        "ticket": str(level_dir / TICKET_FILE),
        **({"robust": m["robust"]} if "robust" in m else {}),
    }


def robust_extra(robust_eval, device: torch.device, limit: int | None, batch_size: int, seed: int,
                 mask: Mask | None, progress: bool):
    """``run_level``'s ``evaluate_extra`` hook: ``{"robust": {...}}`` (SA and RA on the test split), or None."""
    if robust_eval is None:
        return None
    cfg = resolve_attack(robust_eval, "robust_eval")

    def extra(prepared: Prepared) -> dict:
        from tickets.training.attacks import robust_evaluate

        n = cfg.limit if cfg.limit is not None else limit
        if progress:
            print(f"  robust eval: {cfg.attack} eps {cfg.eps:g}, {cfg.steps} steps, {n or 'all'} test examples",
                  file=sys.stderr)
        return {"robust": robust_evaluate(prepared.model, prepared.task, "test", attack=cfg.attack, eps=cfg.eps,
                                          alpha=cfg.alpha, steps=cfg.steps, device=device, batch_size=batch_size,
                                          limit=n, mask=mask, seed=seed)}

    return extra


def _prunable_scores(prepared: Prepared, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: state[n].detach().cpu() for n in prepared.names}


def _mask_for_level(cfg: FindConfig, prepared: Prepared, run: RunDir, level: int, sparsity: float,
                    imp_masks: dict | None) -> Mask:
    """The level's mask: read back for IMP (drawn at the end of the previous level), drawn now otherwise."""
    ones = Mask.ones_like(prepared.model, prepared.names)
    if cfg.method == "imp":
        if level == 0:
            return ones
        path = run.path / f"level-{level:02d}" / TICKET_FILE
        if not path.exists():
            raise TicketsError(f"IMP level {level} has no ticket in {run.path}: the run is damaged, delete it and rerun")
        return load_ticket(path).mask
    if cfg.method == "reinit":
        return imp_masks[level + 1]  # one-shot levels are numbered from 0, IMP's from 1
    theta0 = _prunable_scores(prepared, prepared.theta0)
    if cfg.method == "omp":
        return magnitude_prune(theta0, ones, sparsity, scope=cfg.scope)
    if cfg.method == "reverse":
        return reverse_prune(theta0, ones, sparsity, scope=cfg.scope)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000 + level)
    return random_prune(ones, sparsity, scope=cfg.scope, generator=gen)


def _imp_prune(cfg: FindConfig, prepared: Prepared, mask: Mask, sparsity: float) -> Mask:
    """Prune the lowest-magnitude survivors of the weights this level ended with."""
    trained = _prunable_scores(prepared, prepared.model.state_dict())
    return magnitude_prune(trained, mask.to("cpu"), sparsity, scope=cfg.scope)


def _start_weights(cfg: FindConfig, prepared: Prepared, run: RunDir) -> tuple[dict, str]:
    """Weights every level starts from (before masking) and how tickets describe them."""
    if cfg.rewind == "init" or cfg.method == "reinit":
        return random_init_state(prepared, cfg.seed), f"reinit:seed-{cfg.seed}"
    if cfg.rewind.startswith("step:") and cfg.rewind != "step:0":
        return prepared.theta0, f"rewind:{cfg.rewind}"  # replaced by the captured state from level 1 on
    return prepared.theta0, "theta0"


def _level_start(cfg: FindConfig, run: RunDir, level: int, start: dict) -> dict:
    """Level 0 starts from θ0 (or the random init); later levels from the rewind point when there is one."""
    if level == 0 or not cfg.rewind.startswith("step:") or cfg.rewind == "step:0":
        return start
    path = run.path / "rewind.safetensors"
    if not path.exists():
        raise TicketsError(
            f"rewind point {cfg.rewind} was never reached in level 0 ({run.path}): choose a smaller K or more epochs"
        )
    from safetensors.torch import load_file

    return load_file(path)


def _rewind_capture(cfg: FindConfig, prepared: Prepared, run: RunDir):
    """During IMP level 0, save the weights after step K when rewinding to step K."""
    if not cfg.rewind.startswith("step:") or cfg.rewind == "step:0":
        return None
    k = int(cfg.rewind[5:])
    path = run.path / "rewind.safetensors"

    def capture(step: int, model: torch.nn.Module) -> None:
        if step == k and not path.exists():
            from safetensors.torch import save_file

            from tickets.runs import atomic_write

            state = {n: t.detach().cpu().contiguous() for n, t in model.state_dict().items()}
            atomic_write(path, lambda tmp: save_file(state, str(tmp)))
            run.log("rewind_point", step=k)

    return capture


def _ticket_weights(cfg: FindConfig, prepared: Prepared, run: RunDir) -> dict | None:
    """Tickets carry their weights only when those are not θ0 (a rewind step): the prunable tensors suffice."""
    if cfg.rewind.startswith("step:") and cfg.rewind != "step:0":
        path = run.path / "rewind.safetensors"
        if path.exists():
            from safetensors.torch import load_file

            state = load_file(path)
            return {n: state[n] for n in prepared.names}
    return None


def _meta(cfg: FindConfig, prepared: Prepared, run: RunDir, level: int, target: float, weights: str,
          mask: Mask) -> dict:
    return {
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
        "adversarial": to_dict(cfg.train.adversarial),
        "run": run.path.name,
        "tickets_version": __version__,
    }
